//! API versions: the one berthd serves, and the oldest a client may ask for.

/// An API version as (major, minor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl ApiVersion {
    pub const CURRENT: ApiVersion = ApiVersion(1, 50);
    /// the oldest version served unless `DOCKER_MIN_API_VERSION` says otherwise (as
    /// Docker 25 and later)
    pub const MIN: ApiVersion = ApiVersion(1, 24);
    /// the oldest `DOCKER_MIN_API_VERSION` may name (dockerd 20.10's floor)
    pub const OLDEST: ApiVersion = ApiVersion(1, 12);

    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.split_once('.')?;
        Some(ApiVersion(a.parse().ok()?, b.parse().ok()?))
    }

    /// The floor from `DOCKER_MIN_API_VERSION` (a value from 1.12 to the current version),
    /// or the default.
    pub fn min_from_env(value: Option<&str>) -> Result<Self, String> {
        let Some(v) = value.filter(|v| !v.is_empty()) else {
            return Ok(Self::MIN);
        };
        match Self::parse(v.trim_start_matches('v')) {
            Some(m) if m < Self::OLDEST => Err(format!(
                "invalid DOCKER_MIN_API_VERSION: {v} is below the oldest supported API version, {}",
                Self::OLDEST
            )),
            Some(m) if m > Self::CURRENT => Err(format!(
                "invalid DOCKER_MIN_API_VERSION: {v} is above the current API version, {}",
                Self::CURRENT
            )),
            Some(m) => Ok(m),
            None => Err(format!(
                "invalid DOCKER_MIN_API_VERSION: {v:?} is not a version"
            )),
        }
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_from_env() {
        assert_eq!(ApiVersion::min_from_env(None), Ok(ApiVersion::MIN));
        assert_eq!(ApiVersion::min_from_env(Some("")), Ok(ApiVersion::MIN));
        assert_eq!(
            ApiVersion::min_from_env(Some("1.12")),
            Ok(ApiVersion(1, 12))
        );
        assert!(ApiVersion::min_from_env(Some("1.11")).is_err());
        assert!(ApiVersion::min_from_env(Some("1.51")).is_err());
        assert!(ApiVersion::min_from_env(Some("x")).is_err());
        assert!(ApiVersion(1, 9) < ApiVersion(1, 10));
    }
}
