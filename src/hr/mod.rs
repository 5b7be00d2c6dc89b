//! HR feeds into Identity files: `gatehouse hr import`'s pure part. A feed (CSV, JSON or
//! SCIM) and a [`mapping::Mapping`] become the Identity files to write, with a report of
//! joiners, movers, leavers, rehires and conversions, the records refused and why, and the
//! mass-change brake. Nothing here reads or writes files or Git: that is `cli::hr`.

pub mod feed;
pub mod import;
pub mod mapping;
pub mod yaml;

pub use feed::{Feed, Format};
pub use import::{
    Change, ExistingFile, InputError, Kind, Limit, Missing, Notice, Options, Outcome, import,
};
pub use mapping::{Field, Mapping, MappingError};
