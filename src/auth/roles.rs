//! Roles and sets of roles.

use std::fmt;

/// A role a token can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Reads tasks, runs, events, workers.
    Observer,
    /// Submits tasks and cancels its own.
    Submitter,
    /// Leases tasks and reports on them.
    Worker,
    /// Reads dossiers and decides reviews.
    Reviewer,
    /// Assigns reviews, cancels any task, handles dead-letter, reads the audit log.
    ReviewAdmin,
}

impl Role {
    /// Every role, in declaration order (the order `RoleSet::roles` lists).
    pub const ALL: [Role; 5] = [
        Role::Observer,
        Role::Submitter,
        Role::Worker,
        Role::Reviewer,
        Role::ReviewAdmin,
    ];

    /// The claim spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Observer => "observer",
            Role::Submitter => "submitter",
            Role::Worker => "worker",
            Role::Reviewer => "reviewer",
            Role::ReviewAdmin => "review_admin",
        }
    }

    /// Parses the claim spelling.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of roles (a bit set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RoleSet(u8);

impl RoleSet {
    /// Every role: what `auth.mode = "none"` grants and the first admin token
    /// carries.
    pub fn all() -> RoleSet {
        RoleSet::from_roles(&Role::ALL)
    }

    /// The set of `roles`.
    pub fn from_roles(roles: &[Role]) -> RoleSet {
        RoleSet(roles.iter().fold(0, |acc, r| acc | r.bit()))
    }

    /// Contains `role`.
    pub fn has(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// Shares at least one role with `other`.
    pub fn intersects(self, other: RoleSet) -> bool {
        self.0 & other.0 != 0
    }

    /// Holds no role (a token may carry none; it then passes no role-checked
    /// route).
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The roles, in `Role::ALL` order.
    pub fn roles(self) -> Vec<Role> {
        Role::ALL.into_iter().filter(|r| self.has(*r)).collect()
    }

    /// The claim spellings.
    pub fn names(self) -> Vec<String> {
        self.roles()
            .iter()
            .map(|r| r.as_str().to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_hold_what_they_were_made_of() {
        let s = RoleSet::from_roles(&[Role::Worker, Role::Reviewer]);
        assert!(s.has(Role::Worker) && s.has(Role::Reviewer) && !s.has(Role::Observer));
        assert_eq!(s.names(), ["worker", "reviewer"]);
        assert!(s.intersects(RoleSet::from_roles(&[Role::Reviewer])));
        assert!(!s.intersects(RoleSet::from_roles(&[Role::ReviewAdmin])));
        assert_eq!(RoleSet::all().roles().len(), 5);
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("admin"), None);
    }
}
