//! The one batch engine through the shipped binary (issue 16): `put-wal` is a batch of one
//! and gets the same commit as `archive-wal`, the repair of a missing catalogue line included.

use std::fs;

use walvault_tests::{SERVER, World, describe, queue_file, small_segment};

const S01: &str = "000000010000000000000001";
const S02: &str = "000000010000000000000002";

#[test]
fn put_wal_repairs_a_catalogue_line_lost_between_store_and_catalogue() {
    let world = World::new("wal_segment_size = \"1MB\"\ncompression = \"zstd\"");
    let pg_wal = world.path("pg_wal");
    fs::create_dir_all(&pg_wal).expect("pg_wal");
    queue_file(&pg_wal.join(S01), &small_segment(S01, 1));
    queue_file(&pg_wal.join(S02), &small_segment(S02, 2));
    world.own_all();
    let put = |name: &str| {
        let out = world.walvault(&[
            "put-wal",
            SERVER,
            pg_wal.join(name).to_str().expect("utf-8"),
        ]);
        assert!(out.status.success(), "{}", describe(&out));
    };
    put(S01);
    put(S02);
    let catalogue = world.wals().join(format!("{SERVER}-xlog.db"));
    let complete = fs::read_to_string(&catalogue).expect("catalogue");
    assert_eq!(complete.lines().count(), 2);
    // As after a crash between storing S02 and appending its line: the copy is durable, the
    // line is not. PostgreSQL retries the same file.
    let first_line = complete.lines().next().expect("S01's line").to_owned() + "\n";
    fs::write(&catalogue, &first_line).expect("lose the line");
    world.own_all();
    put(S02);
    assert_eq!(
        fs::read_to_string(&catalogue).expect("catalogue"),
        complete,
        "the retry wrote the missing line, as archive-wal's commit does"
    );
    // And once repaired, a further retry adds nothing.
    put(S02);
    assert_eq!(fs::read_to_string(&catalogue).expect("catalogue"), complete);
}
