//! CNI errors: every failure maps to one spec error code, in one place.

use serde::Serialize;

/// The error codes of the CNI specification, plus podnet's own (100+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: incompatible CNI version.
    IncompatibleVersion,
    /// 2: unsupported field in network configuration.
    UnsupportedField,
    /// 3: container unknown or does not exist.
    UnknownContainer,
    /// 4: invalid necessary environment variables.
    InvalidEnvironment,
    /// 5: I/O failure.
    IoFailure,
    /// 6: failed to decode content.
    DecodeFailure,
    /// 7: invalid network config.
    InvalidNetworkConfig,
    /// 11: try again later.
    TryAgainLater,
    /// 50: the plugin is not available (cannot service ADD).
    NotAvailable,
    /// 51: the plugin is available with limited connectivity.
    LimitedConnectivity,
    /// 100: no free address in a range set.
    AddressesExhausted,
    /// 101: the kernel refused a network operation.
    KernelFailure,
    /// 102: CHECK found the pod's network not as ADD left it.
    CheckFailed,
    /// 103: the delegated IPAM plugin failed.
    DelegatedIpamFailure,
}

impl ErrorCode {
    /// The numeric code written into the error JSON.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::IoFailure => 5,
            ErrorCode::DecodeFailure => 6,
            ErrorCode::InvalidNetworkConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::NotAvailable => 50,
            ErrorCode::LimitedConnectivity => 51,
            ErrorCode::AddressesExhausted => 100,
            ErrorCode::KernelFailure => 101,
            ErrorCode::CheckFailed => 102,
            ErrorCode::DelegatedIpamFailure => 103,
        }
    }
}

/// A CNI error: code, message, optional details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    /// Spec error code.
    pub code: ErrorCode,
    /// Short message.
    pub msg: String,
    /// Longer details, if any.
    pub details: String,
    /// Raw numeric code passed through from a delegated plugin.
    pub raw_code: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorJson<'a> {
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

impl CniError {
    /// An error with `code` and `msg`.
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
            raw_code: None,
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The numeric code to report.
    pub fn numeric_code(&self) -> u32 {
        self.raw_code.unwrap_or(self.code.code())
    }

    /// The error JSON the spec asks for on stdout.
    pub fn to_json(&self, cni_version: &str) -> String {
        serde_json::to_string(&ErrorJson {
            cni_version,
            code: self.numeric_code(),
            msg: &self.msg,
            details: &self.details,
        })
        .unwrap_or_else(|_| format!("{{\"code\":{},\"msg\":\"error\"}}", self.numeric_code()))
    }
}

impl From<podnet_ipam::IpamError> for CniError {
    fn from(e: podnet_ipam::IpamError) -> Self {
        use podnet_ipam::IpamError as E;
        let code = match &e {
            E::Config(_) => ErrorCode::InvalidNetworkConfig,
            E::Exhausted(_) => ErrorCode::AddressesExhausted,
            E::Store { .. } | E::Corrupt { .. } => ErrorCode::IoFailure,
        };
        CniError::new(code, e.to_string())
    }
}

impl From<podnet_dataplane::DataplaneError> for CniError {
    fn from(e: podnet_dataplane::DataplaneError) -> Self {
        use podnet_dataplane::DataplaneError as E;
        let code = match e.cause() {
            E::NoNamespace(_) => ErrorCode::UnknownContainer,
            E::InterfaceExists { .. } => ErrorCode::InvalidEnvironment,
            E::Invalid(_) => ErrorCode::InvalidNetworkConfig,
            E::CheckFailed(_) => ErrorCode::CheckFailed,
            E::Kernel(_) | E::RollbackFailed { .. } => ErrorCode::KernelFailure,
        };
        match &e {
            // The message says why ADD failed; the details what was left behind.
            E::RollbackFailed { error, rollback } => CniError::new(code, error.to_string())
                .with_details(format!("rolling back failed: {rollback}")),
            _ => CniError::new(code, e.to_string()),
        }
    }
}

impl From<podnet_kernel::KernelError> for CniError {
    fn from(e: podnet_kernel::KernelError) -> Self {
        CniError::new(ErrorCode::KernelFailure, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_rollback_keeps_the_cause_and_says_what_was_left() {
        use podnet_dataplane::DataplaneError as E;
        let e = E::RollbackFailed {
            error: Box::new(E::InterfaceExists {
                ifname: "eth0".into(),
                netns: "/run/netns/p".into(),
            }),
            rollback: "delete pn0123: Operation not permitted".into(),
        };
        let c = CniError::from(e);
        assert_eq!(c.code, ErrorCode::InvalidEnvironment, "the cause's code");
        assert_eq!(c.msg, "interface eth0 already exists in /run/netns/p");
        assert_eq!(
            c.details,
            "rolling back failed: delete pn0123: Operation not permitted"
        );
    }

    #[test]
    fn every_code_has_its_spec_number() {
        let table = [
            (ErrorCode::IncompatibleVersion, 1),
            (ErrorCode::UnsupportedField, 2),
            (ErrorCode::UnknownContainer, 3),
            (ErrorCode::InvalidEnvironment, 4),
            (ErrorCode::IoFailure, 5),
            (ErrorCode::DecodeFailure, 6),
            (ErrorCode::InvalidNetworkConfig, 7),
            (ErrorCode::TryAgainLater, 11),
            (ErrorCode::NotAvailable, 50),
            (ErrorCode::LimitedConnectivity, 51),
            (ErrorCode::AddressesExhausted, 100),
            (ErrorCode::KernelFailure, 101),
            (ErrorCode::CheckFailed, 102),
            (ErrorCode::DelegatedIpamFailure, 103),
        ];
        for (code, n) in table {
            assert_eq!(code.code(), n, "{code:?}");
        }
    }

    #[test]
    fn error_json_has_the_spec_fields() {
        let e =
            CniError::new(ErrorCode::InvalidNetworkConfig, "bad mtu").with_details("mtu 10 < 68");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.1.0")).unwrap();
        assert_eq!(v["code"], 7);
        assert_eq!(v["msg"], "bad mtu");
        assert_eq!(v["details"], "mtu 10 < 68");
        assert_eq!(v["cniVersion"], "1.1.0");
    }
}
