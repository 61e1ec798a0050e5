//! Whether the kernel holds a plan: what the lab waits for after a change,
//! and what `podnet doctor` reports when it does not.

use std::collections::BTreeSet;
use std::fmt;

use podnet_kernel::nftables::{Family, NftHandle, SetElement};

use crate::error::FirewallError;
use crate::layout::TABLE;
use crate::plan::Plan;

/// How one set of the kernel's table differs from the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDifference {
    /// Set name.
    pub set: String,
    /// The plan needs the set; the kernel has none.
    pub set_missing: bool,
    /// The kernel has the set; the plan needs none.
    pub set_extra: bool,
    /// Elements the plan needs that the set lacks.
    pub missing: usize,
    /// Elements the set holds that the plan does not.
    pub extra: usize,
}

impl fmt::Display for SetDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = &self.set;
        if self.set_missing {
            return write!(f, "set {set} missing ({} elements)", self.missing);
        }
        if self.set_extra {
            return write!(f, "set {set} not needed ({} elements)", self.extra);
        }
        write!(
            f,
            "set {set}: {} elements missing, {} extra",
            self.missing, self.extra
        )
    }
}

/// How the kernel's table differs from `plan`, set by set (empty: it holds the plan).
pub fn differences(nft: &mut NftHandle, plan: &Plan) -> Result<Vec<SetDifference>, FirewallError> {
    let names: BTreeSet<String> = nft.set_names(Family::Inet, TABLE)?.into_iter().collect();
    let mut out = Vec::new();
    for (set, want) in &plan.sets {
        let name = set.name();
        let have: BTreeSet<SetElement> = if names.contains(&name) {
            nft.set_elements(Family::Inet, TABLE, &name)?
                .into_iter()
                .collect()
        } else {
            BTreeSet::new()
        };
        let diff = SetDifference {
            set_missing: !names.contains(&name),
            set_extra: false,
            missing: want.difference(&have).count(),
            extra: have.difference(want).count(),
            set: name,
        };
        if diff.set_missing || diff.missing > 0 || diff.extra > 0 {
            out.push(diff);
        }
    }
    let wanted: BTreeSet<String> = plan.sets.keys().map(|s| s.name()).collect();
    for name in names.difference(&wanted) {
        let extra = nft.set_elements(Family::Inet, TABLE, name)?.len();
        out.push(SetDifference {
            set: name.clone(),
            set_missing: false,
            set_extra: true,
            missing: 0,
            extra,
        });
    }
    Ok(out)
}

/// True when the kernel's table holds exactly the sets and elements of
/// `plan` (and no table at all for an empty plan).
pub fn holds(nft: &mut NftHandle, plan: &Plan) -> Result<bool, FirewallError> {
    Ok(differences(nft, plan)?.is_empty())
}
