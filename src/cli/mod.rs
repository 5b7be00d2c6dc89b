//! The `gatehouse` command line: `plan`, `validate`, `explain`, `audit`, `hr import` and `crds`.

pub mod audit;
mod break_glass_rows;
mod commit;
mod explain;
pub mod hr;
mod inputs;
mod plan;
mod report;
mod review;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// gatehouse: the joiner / mover / leaver lifecycle of every identity, from Git.
#[derive(Parser, Debug)]
#[command(name = "gatehouse", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How logs are written.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show what a change grants and revokes, per person and target.
    Plan(plan::PlanArgs),
    /// Check manifests and policies; exit 1 on any error.
    Validate(validate::ValidateArgs),
    /// Explain one identity's access: what it holds and why, what it does not and why not.
    Explain(explain::ExplainArgs),
    /// Replay Git history: who had what access, when, and why (granted and revoked rows).
    #[command(long_about = audit::LONG_ABOUT)]
    Audit(audit::AuditArgs),
    /// HR system of record: import a feed into Identity files and a signed commit.
    Hr(hr::HrArgs),
    /// Access reviews: open a cycle as one file of pending items per reviewer.
    Review(review::ReviewArgs),
    /// Print the CustomResourceDefinitions (or write one file per kind).
    Crds(CrdsArgs),
    /// Run the controller against the cluster in KUBECONFIG or in-cluster config.
    Run(RunArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Watch one namespace only (default: all namespaces).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Full re-sync interval, to repair drift on targets (Go duration).
    #[arg(long, default_value = "5m")]
    resync: String,
    #[command(flatten)]
    engine: inputs::EngineArgs,
    /// Address for /livez, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: std::net::SocketAddr,
    /// Take part in leader election, so that of several replicas only one writes.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "gatehouse-controller")]
    leader_election_id: String,
    /// How long a leader's Lease lasts without renewal (Go duration, at least 2s).
    #[arg(long, default_value = "15s")]
    lease_duration: String,
    /// This replica's name in the Lease and in Events (default: $POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Folder for the PolicySources' Git repositories (default: a folder in the temp dir).
    #[arg(long, env = "GATEHOUSE_SOURCE_CACHE_DIR")]
    source_cache_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct CrdsArgs {
    /// Write one file per kind into this directory instead of printing.
    #[arg(long, value_name = "DIR")]
    write_dir: Option<PathBuf>,
}

/// Output formats.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// For people at a terminal.
    Text,
    /// The documented, stable JSON format.
    Json,
    /// A pull-request comment.
    Markdown,
}

/// Runs the CLI and maps the outcome to an exit code: 0 success, 1 findings or invalid
/// input, 2 usage errors.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr so that stdout stays a clean plan; `RUST_LOG=gatehouse=debug` shows timings.
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            // The controller reports what it does; the offline commands stay quiet.
            match cli.command {
                Command::Run(_) => "info".into(),
                _ => "warn".into(),
            }
        })
    };
    // Colours only on a terminal: a pod's log or a file gets plain text.
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter());
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let result = match cli.command {
        Command::Plan(args) => plan::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Hr(args) => hr::run(args),
        Command::Review(args) => review::run(args),
        Command::Crds(args) => crds(args),
        Command::Run(args) => run(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn crds(args: CrdsArgs) -> Result<ExitCode, String> {
    match args.write_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            for (file, crd) in crate::crds::all() {
                let path = dir.join(file);
                std::fs::write(&path, crate::crds::to_yaml(&crd))
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
        None => print!("{}", crate::crds::bundle_yaml()),
    }
    Ok(ExitCode::SUCCESS)
}

fn run(args: RunArgs) -> Result<ExitCode, String> {
    use crate::engine::lifecycle::parse_duration;
    let duration = |flag: &str, value: &str| {
        parse_duration(value)
            .ok()
            .and_then(|d| std::time::Duration::try_from(d).ok())
            .ok_or_else(|| format!("--{flag} {value:?} is not a duration like 5m or 168h"))
    };
    let options = crate::controller::Options {
        namespace: args.namespace,
        resync: duration("resync", &args.resync)?,
        settings: args.engine.settings(),
        metrics: Default::default(),
        health: Default::default(),
        leader: None,
        instance: args.instance.clone().or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        }),
        clock_offset: Default::default(),
        source_cache_dir: args
            .source_cache_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("gatehouse-sources")),
    };
    let mut options = options;
    if args.leader_elect {
        let lease_duration = duration("lease-duration", &args.lease_duration)?;
        if lease_duration < std::time::Duration::from_secs(2) {
            return Err(format!(
                "--lease-duration {:?} is too short; use at least 2s",
                args.lease_duration
            ));
        }
        options.leader = Some(crate::controller::LeaderOptions {
            lease: args.leader_election_id.clone(),
            namespace: args.leader_election_namespace.clone(),
            identity: options
                .instance
                .clone()
                .unwrap_or_else(|| format!("gatehouse-{}", std::process::id())),
            duration: lease_duration,
        });
    }
    let listen = args.listen;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("no Kubernetes configuration (KUBECONFIG or in-cluster): {e}"))?;
        // Installed now, not when the controller first polls it: a SIGTERM during start-up
        // is then a clean shutdown too.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
        let shutdown = async move {
            tokio::select! {
                _ = async { match interrupt.as_mut() { Some(i) => { i.recv().await; } None => std::future::pending().await } } => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen} (--listen): {e}"))?;
        // The bound address, so `--listen 127.0.0.1:0` can be found (tests, side-by-side runs).
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "serving /livez, /readyz, /metrics and the hooks");
        }
        let routes = crate::http::router(options.health.clone(), options.metrics.clone())
            .merge(crate::http::hooks(client.clone()));
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, routes).await {
                tracing::error!(%error, "HTTP server stopped");
            }
        });
        crate::controller::run(client, options, shutdown).await.map_err(|e| e.to_string())
    })?;
    Ok(ExitCode::SUCCESS)
}
