//! Whether the kernel holds a plan: what the lab waits for after a change.

use std::collections::BTreeSet;

use podnet_kernel::nftables::{Family, NftHandle, SetElement};

use crate::error::FirewallError;
use crate::layout::TABLE;
use crate::plan::Plan;

/// True when the kernel's table holds exactly the sets and elements of
/// `plan` (and no table at all for an empty plan).
pub fn holds(nft: &mut NftHandle, plan: &Plan) -> Result<bool, FirewallError> {
    let names = nft.set_names(Family::Inet, TABLE)?;
    if plan.layout().is_empty() {
        return Ok(names.is_empty());
    }
    let want: BTreeSet<String> = plan.sets.keys().map(|s| s.name()).collect();
    if names.iter().cloned().collect::<BTreeSet<_>>() != want {
        return Ok(false);
    }
    for (set, elems) in &plan.sets {
        let have: BTreeSet<SetElement> = nft
            .set_elements(Family::Inet, TABLE, &set.name())?
            .into_iter()
            .collect();
        if &have != elems {
            return Ok(false);
        }
    }
    Ok(true)
}
