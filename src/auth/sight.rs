//! The read model: which tasks a caller sees, and how much of each.
//!
//! With `auth.visibility = "own"` (the default) a task's content — payload,
//! result, step output, what its agents reported, review comments — is for
//! the principal that submitted it and for reviewers; an `observer` sees every
//! task's metadata and state with the content withheld; a caller with neither
//! (a submitter or worker only) sees its own tasks and no others (404, as if
//! they did not exist). With `"all"` every caller that may read sees every
//! task in full. docs/security.md ("Who sees what") is the same table.

use super::{Identity, Role, RoleSet};
pub use crate::config::Visibility;

/// How much of one task a caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sight {
    /// Everything.
    Full,
    /// Metadata and state; content withheld.
    Metadata,
}

/// A caller, as the read model sees it.
#[derive(Debug, Clone)]
pub struct Viewer {
    principal: String,
    roles: RoleSet,
    mode: Visibility,
}

const CONTENT_READERS: [Role; 2] = [Role::Reviewer, Role::ReviewAdmin];

impl Viewer {
    /// The read model of `who` under `mode`.
    pub fn new(who: &Identity, mode: Visibility) -> Viewer {
        Viewer {
            principal: who.principal.clone(),
            roles: who.roles,
            mode,
        }
    }

    /// What the caller sees of a task submitted by `submitted_by` (`None`:
    /// the task is not shown at all).
    pub fn sight(&self, submitted_by: &str) -> Option<Sight> {
        if let Some(s) = self.uniform() {
            return Some(s);
        }
        if submitted_by == self.principal {
            Some(Sight::Full)
        } else if self.roles.has(Role::Observer) {
            Some(Sight::Metadata)
        } else {
            None
        }
    }

    /// The sight that holds for every task, when it does not depend on who
    /// submitted it.
    pub fn uniform(&self) -> Option<Sight> {
        if self.mode == Visibility::All
            || self.roles.intersects(RoleSet::from_roles(&CONTENT_READERS))
        {
            Some(Sight::Full)
        } else {
            None
        }
    }

    /// Whether the caller sees tasks it did not submit (in lists and streams).
    pub fn sees_others(&self) -> bool {
        self.uniform().is_some() || self.roles.has(Role::Observer)
    }

    /// The caller's principal.
    pub fn principal(&self) -> &str {
        &self.principal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(roles: &[Role], mode: Visibility) -> Viewer {
        Viewer::new(
            &Identity {
                principal: "me".into(),
                roles: RoleSet::from_roles(roles),
            },
            mode,
        )
    }

    #[test]
    fn the_read_model_table() {
        use Role::*;
        use Sight::*;
        // (roles, sight of my task, sight of someone else's), mode "own".
        let table: &[(&[Role], Option<Sight>, Option<Sight>)] = &[
            (&[Submitter], Some(Full), None),
            (&[Worker], Some(Full), None),
            (&[Observer], Some(Full), Some(Metadata)),
            (&[Observer, Submitter], Some(Full), Some(Metadata)),
            (&[Reviewer], Some(Full), Some(Full)),
            (&[ReviewAdmin], Some(Full), Some(Full)),
        ];
        for (roles, mine, theirs) in table {
            let v = viewer(roles, Visibility::Own);
            assert_eq!(v.sight("me"), *mine, "{roles:?} own task");
            assert_eq!(v.sight("you"), *theirs, "{roles:?} other's task");
            assert_eq!(v.sees_others(), theirs.is_some(), "{roles:?}");
            let all = viewer(roles, Visibility::All);
            assert_eq!(all.sight("you"), Some(Full), "{roles:?} under all");
        }
    }
}
