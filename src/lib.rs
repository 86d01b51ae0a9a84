//! concord keeps a company's CRM, ERP and finance systems in agreement.
//!
//! Records flow from each system through one canonical [`model`] into the
//! [`store`]; see `ARCHITECTURE.md` in the design docs for the whole picture.

pub mod cli;
pub mod logging;
pub mod model;
pub mod settings;
pub mod store;
