//! idgov's rules, with no I/O: identities and their lifecycle, HR event
//! semantics, the classification policy and catalog, birthright, roster diffs,
//! the mass-change guard and the audit hash chain.
//!
//! Every function that depends on time takes `now` as an argument; nothing in
//! this crate reads a clock, a file or the network (see `clippy.toml`).

/// An enum stored, configured and typed as lowercase text: `as_str`,
/// `Display`, a forgiving `FromStr` (case, `-` for `_`), serde in
/// snake_case, and `ALL` in declaration order. Other crates use it for their
/// own text enums (the store's outbox kinds).
#[macro_export]
macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
            ::serde::Serialize, ::serde::Deserialize,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The lowercase name used in storage, files and the CLI.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let norm = s.trim().to_ascii_lowercase().replace('-', "_");
                match norm.as_str() {
                    $($s => Ok($name::$variant),)+
                    _ => Err(format!(
                        "unknown {} {}; expected one of: {}",
                        stringify!($name), $crate::error::echo(s), [$($s),+].join(", ")
                    )),
                }
            }
        }
    };
}

pub mod access;
pub mod audit;
pub mod classification;
pub mod drift;
pub mod error;
pub mod evidence;
pub mod grant;
pub mod guard;
pub mod history;
pub mod hr;
pub mod identity;
pub mod lifecycle;
pub mod policy;
pub mod review;
pub mod roster;
pub mod time;

pub use classification::Classification;
pub use error::{DomainError, ErrorCode, FieldViolation};
