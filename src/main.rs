use std::process::ExitCode;

/// mimalloc: loading 100k manifests is allocation-bound, and glibc's allocator spends a
/// quarter of that time in malloc and free.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    gatehouse::cli::main()
}
