//! The contract every [`StateStore`] keeps, run against each implementation (the embedded redb
//! store, the in-memory one, and Redis on a redis-server started for the test): records, one
//! reservation per target, landed-file owners, and locks with strictly increasing fencing
//! tokens.

use ferry_server::store::memory::MemoryStore;
use ferry_server::store::redb::RedbStore;
use ferry_server::store::redis::RedisStore;
use ferry_server::store::{Created, Kind, Phase, StateStore, UploadRecord};

fn record(id: &str, target: Option<&str>) -> UploadRecord {
    UploadRecord {
        id: id.into(),
        owner: "ann".into(),
        length: Some(10),
        offset: 0,
        metadata: Some("filename YS5iaW4=".into()),
        target: target.map(Into::into),
        overwrite: false,
        kind: Kind::Normal,
        phase: Phase::Active,
        created: 1,
        expires: 2,
    }
}

async fn contract(store: &dyn StateStore) {
    // Records and reservations.
    assert_eq!(
        store.create(&record("a", Some("x/y"))).await.unwrap(),
        Created::Ok
    );
    assert_eq!(
        store.create(&record("b", Some("x/y"))).await.unwrap(),
        Created::TargetBusy { holder: "a".into() },
        "one target, one unfinished upload"
    );
    assert!(
        store.get("b").await.unwrap().is_none(),
        "a refused create stores nothing"
    );
    let mut a = store.get("a").await.unwrap().unwrap();
    assert_eq!(a, record("a", Some("x/y")));
    a.offset = 5;
    a.kind = Kind::Partial {
        final_id: Some("f".into()),
    };
    store.update(&a).await.unwrap();
    assert_eq!(
        store.get("a").await.unwrap().unwrap(),
        a,
        "updates round-trip"
    );
    assert_eq!(
        store.create(&record("p", None)).await.unwrap(),
        Created::Ok,
        "no target, no reservation"
    );
    assert_eq!(store.all().await.unwrap().len(), 2);

    // Releasing a reservation held by someone else does nothing.
    store.release_target("x/y", "zzz").await.unwrap();
    assert!(matches!(
        store.create(&record("c", Some("x/y"))).await.unwrap(),
        Created::TargetBusy { .. }
    ));
    store.release_target("x/y", "a").await.unwrap();
    assert_eq!(
        store.create(&record("c", Some("x/y"))).await.unwrap(),
        Created::Ok
    );
    // Removing a record frees the reservation it holds, and only that one.
    store.remove("a").await.unwrap();
    assert!(store.get("a").await.unwrap().is_none());
    assert!(matches!(
        store.create(&record("d", Some("x/y"))).await.unwrap(),
        Created::TargetBusy { .. }
    ));
    store.remove("c").await.unwrap();
    assert_eq!(
        store.create(&record("d", Some("x/y"))).await.unwrap(),
        Created::Ok
    );
    store.remove("missing").await.unwrap();

    // Owners of landed files.
    assert_eq!(store.file_owner("x/y").await.unwrap(), None);
    store.set_file_owner("x/y", "ann").await.unwrap();
    store.set_file_owner("x/y", "bob").await.unwrap();
    assert_eq!(
        store.file_owner("x/y").await.unwrap().as_deref(),
        Some("bob")
    );

    // Locks: one holder at a time, released on drop, fencing tokens strictly increasing.
    let first = store.try_lock("d").await.unwrap().expect("a free lock");
    first.check().await.unwrap();
    assert!(store.try_lock("d").await.unwrap().is_none(), "held");
    let other = store
        .try_lock("p")
        .await
        .unwrap()
        .expect("locks are per upload");
    let fence = first.fence();
    drop(first);
    let second = store
        .try_lock("d")
        .await
        .unwrap()
        .expect("released on drop");
    assert!(second.fence() > fence, "a later holder has a higher fence");
    second.check().await.unwrap();
    // A final upload claims its parts under locks named `claim:<id>`: a name of its own, not
    // the part's write lock, and one claimant at a time.
    let claim = store
        .try_lock("claim:d")
        .await
        .unwrap()
        .expect("a claim is not the upload's lock");
    assert!(store.try_lock("claim:d").await.unwrap().is_none());
    drop((second, other, claim));
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(&MemoryStore::new()).await;
}

#[tokio::test]
async fn redb_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&RedbStore::open(&dir.path().join("state.redb")).unwrap()).await;
}

/// What only the embedded store promises: one opener at a time, and every committed
/// write there after a reopen (beyond the contract above).
#[tokio::test]
async fn one_opener_and_durable_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(
            store.create(&record("a", Some("x/y"))).await.unwrap(),
            Created::Ok
        );
        let mut a = store.get("a").await.unwrap().unwrap();
        a.offset = 5;
        store.update(&a).await.unwrap();
        store.set_file_owner("x/y", "ann").await.unwrap();
        assert!(
            RedbStore::open(&path).is_err(),
            "a second opener is refused"
        );
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.get("a").await.unwrap().unwrap().offset, 5);
    assert_eq!(
        store.file_owner("x/y").await.unwrap().as_deref(),
        Some("ann")
    );
    assert_eq!(
        store.create(&record("b", Some("x/y"))).await.unwrap(),
        Created::TargetBusy { holder: "a".into() },
        "reservations survive too"
    );
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    let Some(redis) = ferry_testkit::redis::Redis::start_or_skip() else {
        return;
    };
    contract(&RedisStore::open(&redis.url()).unwrap()).await;
}
