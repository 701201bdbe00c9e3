//! A container's lifecycle state as its owner records it (what `skiff ps` shows).
//!
//! `Created` (prepared, not started) → `Running` (started; its owner waits for it) →
//! `Exited` (the owner recorded the exit code). A record that says `Running` while its
//! owner is gone has lost its owner: [`Status`] tells that apart as `Unknown`.

use serde::{Deserialize, Serialize};

/// The recorded state. Serialized as `created`, `running`, `exited` (the strings the
/// records held before the type existed, so old records still load).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Exited,
}

/// What a container is, from its recorded state and whether its owner still lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited {
        exit_code: i32,
        /// Seconds since the epoch.
        finished: u64,
    },
    /// The owner ended without recording how the container ended.
    Unknown,
}

impl Status {
    /// `state` as recorded, `owner_alive` as checked now.
    pub fn of(
        state: ContainerState,
        owner_alive: bool,
        exit_code: Option<i32>,
        finished: Option<u64>,
    ) -> Self {
        match (state, owner_alive, exit_code, finished) {
            (ContainerState::Created, _, _, _) => Status::Created,
            (ContainerState::Running, true, _, _) => Status::Running,
            (_, _, Some(exit_code), Some(finished)) => Status::Exited {
                exit_code,
                finished,
            },
            _ => Status::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn states_serialize_as_the_old_strings() {
        for (s, text) in [
            (ContainerState::Created, "\"created\""),
            (ContainerState::Running, "\"running\""),
            (ContainerState::Exited, "\"exited\""),
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), text);
            assert_eq!(serde_json::from_str::<ContainerState>(text).unwrap(), s);
        }
        assert!(serde_json::from_str::<ContainerState>("\"paused\"").is_err());
    }

    #[test]
    fn status_accounts_for_the_owner() {
        use ContainerState::*;
        assert_eq!(Status::of(Created, false, None, None), Status::Created);
        assert_eq!(Status::of(Running, true, None, None), Status::Running);
        assert_eq!(Status::of(Running, false, None, None), Status::Unknown);
        assert_eq!(
            Status::of(Exited, false, Some(3), Some(9)),
            Status::Exited {
                exit_code: 3,
                finished: 9
            }
        );
        assert_eq!(Status::of(Exited, false, None, None), Status::Unknown);
    }
}
