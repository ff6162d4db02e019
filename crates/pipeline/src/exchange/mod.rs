//! Profiles between engines: the profile table's schema ([`profile_table`]), publishing profiles
//! computed elsewhere as a generation ([`import_profiles`]), and shipping them to a fleet of
//! replicas through a shared directory ([`ship`]).

pub mod import_profiles;
pub mod profile_table;
pub mod ship;
