//! API types of group `wardengate.io`, version `v1alpha1`.

/// The API group every Wardengate custom resource belongs to.
pub const GROUP: &str = "wardengate.io";
/// The served and stored API version.
pub const VERSION: &str = "v1alpha1";
