//! Placeholder until the converter lands.
use super::{ImportError, Tenant, display, invalid};
use crate::scan::Scan;
use crate::scan::posture::PostureSettings;
use std::path::Path;

pub(super) fn convert(
    path: &Path,
    _tenant: &Tenant<'_>,
    _s: &PostureSettings,
) -> Result<Scan, ImportError> {
    Err(invalid(&display(path), ".", "not supported yet".into()))
}
