//! Placeholder until the converter lands.
use super::{ImportError, Tenant, invalid};
use crate::scan::Scan;

pub(super) fn convert(
    _bytes: &[u8],
    name: &str,
    _tenant: &Tenant<'_>,
) -> Result<Scan, ImportError> {
    Err(invalid(name, ".", "not supported yet".into()))
}
