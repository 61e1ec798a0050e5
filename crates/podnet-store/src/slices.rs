//! EndpointSlices: endpoints given by hand for services without a
//! selector. Each slice is kept as written; its service's endpoints are the
//! sum of its slices (those a proxy reads), rewritten on every slice change.

use podnet_services::{endpoints_of_slices, EndpointSlice, ServiceName};

use crate::cluster::{to_json, ClusterStore};
use crate::error::StoreError;
use crate::kv::Txn;

/// Where slices live (`/podnet-slices/NAMESPACE/NAME`): outside the
/// services' prefix, so the proxies watch only what they program.
const SLICES: &str = "/podnet-slices/";

fn slice_key(n: &ServiceName) -> String {
    format!("{SLICES}{n}")
}

impl ClusterStore {
    /// Every stored slice.
    pub fn endpoint_slices(&self) -> Result<Vec<EndpointSlice>, StoreError> {
        let listing = self.kv().list(SLICES)?;
        listing
            .entries
            .into_iter()
            .map(|(key, raw)| {
                serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt {
                    key,
                    detail: e.to_string(),
                })
            })
            .collect()
    }

    /// Creates or replaces a slice and rewrites its service's endpoints;
    /// returns the slice it replaced. A slice for a service with a selector
    /// is refused (that service's endpoints come from its pods).
    pub fn put_endpoint_slice(
        &self,
        slice: &EndpointSlice,
    ) -> Result<Option<EndpointSlice>, StoreError> {
        self.check_slice_service(slice)?;
        let mut slices = self.endpoint_slices()?;
        let old = slices
            .iter()
            .position(|s| s.key() == slice.key())
            .map(|i| slices.remove(i));
        slices.push(slice.clone());
        let endpoints = endpoints_of_slices(&slice.service_key(), &slices);
        podnet_services::validate::check_endpoints(&endpoints)?;
        self.kv().transact(&Txn {
            puts: vec![(slice_key(&slice.key()), to_json(slice))],
            ..Txn::default()
        })?;
        self.put_endpoints(&endpoints)?;
        if let Some(old) = old
            .as_ref()
            .filter(|o| o.service_key() != slice.service_key())
        {
            self.refresh_slice_endpoints(&old.service_key())?;
        }
        Ok(old)
    }

    /// Deletes a slice and rewrites its service's endpoints; false when there was none.
    pub fn delete_endpoint_slice(&self, key: &ServiceName) -> Result<bool, StoreError> {
        let Some(slice) = self
            .endpoint_slices()?
            .into_iter()
            .find(|s| s.key() == *key)
        else {
            return Ok(false);
        };
        self.kv().transact(&Txn {
            deletes: vec![slice_key(key)],
            ..Txn::default()
        })?;
        self.refresh_slice_endpoints(&slice.service_key())?;
        Ok(true)
    }

    /// Rewrites the endpoints of a service without a selector from its
    /// slices (after the service was created again, or a slice moved away).
    pub fn refresh_slice_endpoints(&self, service: &ServiceName) -> Result<(), StoreError> {
        if self
            .service(service)?
            .is_some_and(|s| !s.selector.is_empty())
        {
            return Ok(());
        }
        let slices = self.endpoint_slices()?;
        self.put_endpoints(&endpoints_of_slices(service, &slices))
    }

    /// Refuses a slice whose stored service has a selector.
    pub(crate) fn check_slice_service(&self, slice: &EndpointSlice) -> Result<(), StoreError> {
        let service = slice.service_key();
        match self.service(&service)? {
            Some(s) if !s.selector.is_empty() => Err(StoreError::SliceForSelector {
                slice: slice.key().to_string(),
                service: service.to_string(),
            }),
            _ => Ok(()),
        }
    }
}
