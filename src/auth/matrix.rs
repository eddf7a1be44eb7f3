//! The permission matrix: every route, who may call it, and its rate class.
//! docs/security.md carries the same table and a test holds them together.

use super::roles::{Role, RoleSet};

/// Rate-limit classes (`[ratelimit]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateClass {
    /// Submissions and cancels.
    Submit,
    /// The worker protocol.
    Worker,
    /// Review and dead-letter actions.
    ReviewAction,
    /// Authenticated reads (every limited `GET`).
    Read,
}

impl RateClass {
    /// Every class (metrics pre-register one label value each).
    pub const ALL: [RateClass; 4] = [
        RateClass::Submit,
        RateClass::Worker,
        RateClass::ReviewAction,
        RateClass::Read,
    ];

    /// The label and config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RateClass::Submit => "submit",
            RateClass::Worker => "worker",
            RateClass::ReviewAction => "review_action",
            RateClass::Read => "read",
        }
    }

    /// The key byte in the rate-limit tree (stable).
    pub fn code(self) -> u8 {
        match self {
            RateClass::Submit => 1,
            RateClass::Worker => 2,
            RateClass::ReviewAction => 3,
            RateClass::Read => 4,
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No authentication (health probes; `/metrics` has its own rule).
    Public,
    /// A valid token with one of these roles.
    Roles(&'static [Role]),
}

/// One route of the API.
#[derive(Debug, PartialEq, Eq)]
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path template (also the `route` metric label).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Rate-limit class, when limited.
    pub class: Option<RateClass>,
    /// An extra, per-object rule the handler enforces (documentation).
    pub object_rule: Option<&'static str>,
}

impl Route {
    /// The roles allowed (empty for public routes).
    pub fn allowed(&self) -> RoleSet {
        match self.access {
            Access::Public => RoleSet::default(),
            Access::Roles(r) => RoleSet::from_roles(r),
        }
    }

    /// Changes state (audited).
    pub fn mutating(&self) -> bool {
        !matches!(self.method, "GET" | "HEAD")
    }
}

use Role::*;

const ANY: &[Role] = &[Observer, Submitter, Worker, Reviewer, ReviewAdmin];
const SUBMITTERS: &[Role] = &[Submitter];
const CANCELLERS: &[Role] = &[Submitter, ReviewAdmin];
const WORKERS: &[Role] = &[Worker];
const REVIEWERS: &[Role] = &[Reviewer, ReviewAdmin];
const ADMINS: &[Role] = &[ReviewAdmin];

macro_rules! routes {
    ($($name:ident = $method:literal $path:literal, $access:expr, $class:expr, $rule:expr;)*) => {
        $(
            #[doc = concat!("`", $method, " ", $path, "`")]
            pub static $name: Route = Route {
                method: $method,
                path: $path,
                access: $access,
                class: $class,
                object_rule: $rule,
            };
        )*
        /// Every route, in documentation order.
        pub static ROUTES: &[&Route] = &[$(&$name,)*];
    };
}

const R: Option<RateClass> = Some(RateClass::Read);
const S: Option<RateClass> = Some(RateClass::Submit);
const W: Option<RateClass> = Some(RateClass::Worker);
const RA: Option<RateClass> = Some(RateClass::ReviewAction);

routes! {
    SUBMIT_TASK = "POST" "/api/v1/tasks", Access::Roles(SUBMITTERS), S, None;
    SUBMIT_AND_STREAM = "POST" "/api/v1/tasks/stream", Access::Roles(SUBMITTERS), S, None;
    LIST_TASKS = "GET" "/api/v1/tasks", Access::Roles(ANY), R, Some("visibility = own: only the caller's tasks, unless observer, reviewer or review_admin");
    GET_TASK = "GET" "/api/v1/tasks/{id}", Access::Roles(ANY), R, Some("visibility = own: another principal's task is 404, or content withheld for an observer");
    TASK_EVENTS = "GET" "/api/v1/tasks/{id}/events", Access::Roles(ANY), R, Some("visibility = own: as GET /api/v1/tasks/{id}");
    DOSSIER = "GET" "/api/v1/tasks/{id}/dossier", Access::Roles(REVIEWERS), R, None;
    CANCEL_TASK = "POST" "/api/v1/tasks/{id}/cancel", Access::Roles(CANCELLERS), S, Some("a submitter cancels only tasks it submitted (a task it does not see is 404); review_admin cancels any");
    GET_RUN = "GET" "/api/v1/runs/{run_id}", Access::Roles(ANY), R, Some("visibility = own: as the run's task");
    EVENTS = "GET" "/api/v1/events", Access::Roles(ANY), R, Some("visibility = own: only events of tasks the caller sees, content withheld as for the task");
    LEASE = "POST" "/api/v1/queues/{queue}/lease", Access::Roles(WORKERS), W, None;
    HEARTBEAT = "POST" "/api/v1/leases/{lease_id}/heartbeat", Access::Roles(WORKERS), W, Some("only the principal that took the lease");
    LEASE_EVENTS = "POST" "/api/v1/leases/{lease_id}/events", Access::Roles(WORKERS), W, Some("only the principal that took the lease");
    COMPLETE = "POST" "/api/v1/leases/{lease_id}/complete", Access::Roles(WORKERS), W, Some("only the principal that took the lease");
    FAIL = "POST" "/api/v1/leases/{lease_id}/fail", Access::Roles(WORKERS), W, Some("only the principal that took the lease");
    RELEASE_LEASE = "POST" "/api/v1/leases/{lease_id}/release", Access::Roles(WORKERS), W, Some("only the principal that took the lease");
    COMPLETE_MANY = "POST" "/api/v1/leases/complete", Access::Roles(WORKERS), W, Some("each item: only the principal that took the lease");
    FAIL_MANY = "POST" "/api/v1/leases/fail", Access::Roles(WORKERS), W, Some("each item: only the principal that took the lease");
    LIST_QUEUES = "GET" "/api/v1/queues", Access::Roles(ANY), R, None;
    LIST_WORKERS = "GET" "/api/v1/workers", Access::Roles(ANY), R, None;
    WORKER_STATUS = "POST" "/api/v1/workers/{worker_id}/status", Access::Roles(WORKERS), W, None;
    DEAD_LETTER = "GET" "/api/v1/dead-letter", Access::Roles(ADMINS), R, None;
    REQUEUE = "POST" "/api/v1/dead-letter/{id}/requeue", Access::Roles(ADMINS), RA, None;
    LIST_REVIEWS = "GET" "/api/v1/reviews", Access::Roles(REVIEWERS), R, None;
    REVIEW_METRICS = "GET" "/api/v1/reviews/metrics", Access::Roles(ANY), R, None;
    GET_REVIEW = "GET" "/api/v1/reviews/{id}", Access::Roles(REVIEWERS), R, None;
    CLAIM_REVIEW = "POST" "/api/v1/reviews/{id}/claim", Access::Roles(REVIEWERS), RA, Some("not while another reviewer holds it; not after deciding it");
    RELEASE_REVIEW = "POST" "/api/v1/reviews/{id}/release", Access::Roles(REVIEWERS), RA, Some("the holder, or review_admin");
    ASSIGN_REVIEW = "POST" "/api/v1/reviews/{id}/assign", Access::Roles(ADMINS), RA, None;
    DECIDE_REVIEW = "POST" "/api/v1/reviews/{id}/decision", Access::Roles(REVIEWERS), RA, Some("the holder if held (review_admin may override); once per reviewer");
    AUDIT = "GET" "/api/v1/audit", Access::Roles(ADMINS), R, None;
    AUDIT_VERIFY = "GET" "/api/v1/audit/verify", Access::Roles(ADMINS), R, None;
    STORE_STATS = "GET" "/api/v1/store", Access::Roles(ADMINS), R, None;
    BACKUP = "GET" "/api/v1/backup", Access::Roles(ADMINS), R, None;
    ME = "GET" "/api/v1/me", Access::Roles(ANY), R, None;
    OPENAPI = "GET" "/api/v1/openapi.json", Access::Public, None, None;
    CONSOLE = "GET" "/", Access::Public, None, Some("the console's page; it holds no data and calls the API with the user's token");
    CONSOLE_ASSET = "GET" "/console/{file}", Access::Public, None, None;
    HEALTH_LIVE = "GET" "/health/live", Access::Public, None, None;
    HEALTH_STARTUP = "GET" "/health/startup", Access::Public, None, None;
    HEALTH_READY = "GET" "/health/ready", Access::Public, None, None;
    METRICS = "GET" "/metrics", Access::Public, None, Some("open by default; metrics.access can require loopback or a bearer token");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_route_is_authenticated_and_limited() {
        for r in ROUTES {
            // The API description is public: it holds no data.
            if r.path.starts_with("/api/") && r.path != OPENAPI.path {
                assert!(
                    matches!(r.access, Access::Roles(_)),
                    "{} {}",
                    r.method,
                    r.path
                );
                assert!(r.class.is_some(), "{} {}", r.method, r.path);
            }
        }
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.method, r.path)),
                "duplicate {} {}",
                r.method,
                r.path
            );
        }
    }
}
