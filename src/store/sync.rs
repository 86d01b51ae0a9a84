//! Store queries of the sync engine's delivery that the shared module does
//! not hold.

use std::collections::HashMap;

use sqlx::Row;

use super::{LOOKUP_CHUNK, Pool, Result, Store, StoreError, parse_id, push_list};
use crate::model::{CanonicalId, EntityKind};

impl Store {
    /// For each of `ids`, the oldest version of it that was sent to
    /// `target` (an attempt counted, or an error kept: a dead letter put
    /// back in line starts its attempts again) without the target's id
    /// becoming known: a create that may have reached the target though
    /// its answer did not come back. The oldest, because a target that
    /// finds such a create by its key answers with what that first create
    /// wrote, however many newer versions were tried since.
    pub async fn outbox_tried_creates(
        &self,
        entity: EntityKind,
        target: &str,
        ids: &[CanonicalId],
    ) -> Result<HashMap<CanonicalId, i64>> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            on_pool!(self, |pool, Db| {
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "SELECT canonical_id, MIN(version) AS version FROM outbox WHERE (attempts > 0 OR last_error IS NOT NULL) AND external_id IS NULL AND entity = ",
                );
                q.push_bind(entity.as_str())
                    .push(" AND target_system = ")
                    .push_bind(target)
                    .push(" AND canonical_id IN ");
                push_list(&mut q, chunk.iter().map(CanonicalId::as_str));
                q.push(" GROUP BY canonical_id");
                let rows = q
                    .build()
                    .fetch_all(pool)
                    .await
                    .map_err(StoreError::query("read outbox"))?;
                for row in &rows {
                    let id: String = row
                        .try_get("canonical_id")
                        .map_err(StoreError::query("read outbox"))?;
                    let version: i64 = row
                        .try_get("version")
                        .map_err(StoreError::query("read outbox"))?;
                    out.insert(parse_id("outbox", &id)?, version);
                }
            });
        }
        Ok(out)
    }
}
