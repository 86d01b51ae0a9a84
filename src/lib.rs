//! concord keeps a company's CRM, ERP and finance systems in agreement.
//!
//! Records flow from each system through one canonical [`model`] into the
//! [`store`]; see `ARCHITECTURE.md` in the design docs for the whole picture.
//!
//! Money is exact and never mixes currencies; field paths address single
//! fields of any record:
//!
//! ```
//! use concord::model::{Currency, FieldPath, Money};
//!
//! let eur = Currency::parse("EUR")?;
//! let sum = Money::parse("0.1", eur)?.checked_add(&Money::parse("0.2", eur)?)?;
//! assert_eq!(sum.to_string(), "0.3 EUR");
//! let usd = Money::parse("1.00", Currency::parse("USD")?)?;
//! assert!(sum.checked_add(&usd).is_err());
//!
//! let mut order = serde_json::json!({ "lines": [{ "quantity": "1" }] });
//! let path = FieldPath::parse("lines[0].quantity")?;
//! path.set(&mut order, "2".into())?;
//! assert_eq!(path.get(&order), Some(&serde_json::json!("2")));
//! # Ok::<(), concord::model::ModelError>(())
//! ```

pub mod api;
pub mod bank;
pub mod cli;
pub mod connector;
pub mod located;
pub mod logging;
pub mod mapping;
pub mod metrics;
pub mod model;
pub mod quality;
pub mod queue;
pub mod reconcile;
pub mod serve;
pub mod settings;
pub mod store;
pub mod sync;
