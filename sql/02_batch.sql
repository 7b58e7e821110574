-- append_batch: atomic, in order, with idempotent items
SELECT (SELECT written_sequence FROM batpak.stats) AS start \gset
CREATE TEMP TABLE b AS
SELECT row_number() OVER () AS n, * FROM batpak.append_batch(ARRAY[
    ROW('cart-1', 'shop', 'cart.opened', '{"i": 1}', NULL, 0, NULL, NULL, NULL),
    ROW('cart-1', 'shop', 'cart.item', '{"i": 2}', '{"m": true}', 1, 'cart-1-item', NULL, NULL),
    ROW('cart-2', 'shop', 'cart.opened', '{"i": 3}', NULL, NULL, NULL, NULL, NULL)
]::batpak.new_event[]);
SELECT n, global_sequence - :start AS rel_seq, entity_sequence FROM b ORDER BY n;
-- all three share one commit time
SELECT count(DISTINCT committed_at) AS commit_times FROM b;

-- one bad item refuses the whole batch: nothing is written
SELECT written_sequence - :start AS written_before FROM batpak.stats;
SELECT try_detail($$SELECT * FROM batpak.append_batch(ARRAY[
    ROW('cart-3', 'shop', 'cart.opened', '{}', NULL, NULL, NULL, NULL, NULL),
    ROW('cart-1', 'shop', 'cart.item', '{}', NULL, 0, NULL, NULL, NULL)
]::batpak.new_event[])$$);
SELECT try($$SELECT * FROM batpak.append_batch(ARRAY[
    ROW('cart-3', 'shop', 'cart.opened', '{}', NULL, NULL, NULL, NULL, NULL),
    ROW('', 'shop', 'cart.item', '{}', NULL, NULL, NULL, NULL, NULL)
]::batpak.new_event[])$$);
SELECT try($$SELECT * FROM batpak.append_batch(ARRAY[
    ROW('cart-3', 'shop', 'cart.opened', '{}', NULL, NULL, 'dup', NULL, NULL),
    ROW('cart-3', 'shop', 'cart.item', '{}', NULL, NULL, 'dup', NULL, NULL)
]::batpak.new_event[])$$);
SELECT try($$SELECT * FROM batpak.append_batch(ARRAY[
    ROW('cart-3', 'shop', 'cart.opened', '{}', NULL, NULL, NULL, NULL, NULL),
    NULL
]::batpak.new_event[])$$);
SELECT written_sequence - :start AS written_after, batpak.stream_version('cart-3') AS cart3
  FROM batpak.stats;

-- within a batch, CAS sees the earlier items of the same batch
SELECT entity_sequence FROM batpak.append_batch(ARRAY[
    ROW('cart-4', 'shop', 'a', '{}', NULL, 0, NULL, NULL, NULL),
    ROW('cart-4', 'shop', 'b', '{}', NULL, 1, NULL, NULL, NULL),
    ROW('cart-4', 'shop', 'c', '{}', NULL, 2, NULL, NULL, NULL)
]::batpak.new_event[]);

-- an item whose key is stored returns its original receipt; the rest is written
SELECT x.global_sequence = b.global_sequence AS original, x.entity_sequence
  FROM batpak.append_batch(ARRAY[
    ROW('cart-1', 'shop', 'cart.item', '{"i": 2}', NULL, NULL, 'cart-1-item', NULL, NULL),
    ROW('cart-1', 'shop', 'cart.closed', '{}', NULL, NULL, NULL, NULL, NULL)
  ]::batpak.new_event[]) WITH ORDINALITY x
  LEFT JOIN b ON b.n = 2 AND x.ordinality = 1
 ORDER BY x.ordinality;

-- empty batch: no rows, nothing written
SELECT count(*) FROM batpak.append_batch('{}'::batpak.new_event[]);
SELECT try($$SELECT * FROM batpak.append_batch(NULL)$$);
SELECT written_sequence - :start AS total_written FROM batpak.stats;
SELECT entity, entity_sequence, kind FROM batpak.read_all(:start) ORDER BY global_sequence;
