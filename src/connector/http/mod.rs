//! The `http` driver: a declarative REST / JSON-RPC engine. A system is a
//! definition file in `connectors/` (see [`definition`]); no Rust per system.

pub mod definition;

use std::sync::Arc;

use super::{Connector, ConnectorError, Definition, Driver, Instance};

/// The `http` driver, registered in [`super::DRIVERS`].
pub static DRIVER: Driver = Driver {
    name: "http",
    summary: "REST and JSON-RPC APIs described by a definition file (auth, pages, incremental pulls, writes)",
    check: definition::check,
    open,
};

fn open(def: &Definition, _instance: &Instance) -> Result<Arc<dyn Connector>, ConnectorError> {
    Err(ConnectorError::config(
        &def.name,
        "the http driver cannot open instances yet",
    ))
}
