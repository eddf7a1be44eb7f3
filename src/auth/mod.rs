//! Authentication and authorisation: bearer JWTs, roles, and the one
//! permission matrix every route is checked against (after its path matched,
//! so an unknown path is a 404 for everyone).

pub mod jwt;
pub mod matrix;
mod roles;
mod sight;

pub use jwt::{AuthFailure, Authenticator, Claims, Identity, KeyError};
pub use matrix::{Access, RateClass, Route, ROUTES};
pub use roles::{Role, RoleSet};
pub use sight::{Sight, Viewer, Visibility};
