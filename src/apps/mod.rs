//! Apps, not just routes: the platform tells the proxy about app deployments
//! (`PUT /apps/{project}/{name}`, see `crate::admin::apps`) and the proxy
//! derives their routes under the platform's own rules
//! (`/work/shared/mse-app-config.md`: the app configuration docs).
//!
//! ```text
//! record      the app record (JSON) and its validation into an App
//! rules       pure rules: expiry, dates, certificate names, status → hosts
//! certificate the owner certificate's notAfter and names (x509-parser)
//! derive      App → its routes (`app.{project}.{name}` and `.config`)
//! cname       custom-domain CNAME checks (hickory), and their recheck loop
//! ownership   the TXT proof that a custom domain is meant for the project
//! store       the registered apps as the reconciler holds them
//! stored      an app record as etcd and the embedded state store keep it
//! mse_toml    the documented `mse.toml`, for `mse-proxy app plan`
//! plan        `mse-proxy app plan`: mse.toml → record → routes, `--apply`
//! ```
//!
//! Apps are the third route source of the one reconciler
//! (`crate::routing::reconciler`): their derived routes are merged with the
//! file's and the API's, validated together and swapped in once.

pub mod certificate;
pub mod cname;
pub mod derive;
mod error;
pub mod mse_toml;
pub mod ownership;
pub mod plan;
pub mod record;
pub mod rules;
pub mod store;
pub mod stored;
mod verdict;
pub mod violation;

pub use error::AppError;
pub use record::{App, AppKey, AppRecord, CertOrigin};
pub use rules::Status;
pub use store::{AppEntry, AppPut, Apps, CnameReport};
pub use violation::{Field, Violation};
