use std::sync::Arc;

use kube_ipam_store::{conformance, MemoryStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_conformance() {
    conformance::run(Arc::new(MemoryStore::new()), "/t")
        .await
        .unwrap();
}
