"""``gather_batches``: the pipeline's one batching, for a file walk and a gRPC stream alike."""

import threading
import time

import pytest

from origin_id.indexer.pipeline import gather_batches


def test_a_ready_source_fills_whole_batches_in_order():
    assert list(gather_batches(range(10), 4, linger_s=0.5)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert list(gather_batches([], 4)) == []


def test_an_item_that_waits_for_its_answer_is_not_held_back_for_a_full_batch():
    """An interactive client sends one item and waits for its answer before the next: each
    item must come out as a batch of its own, not wait for three more that never come."""
    answered = threading.Event()

    def one_at_a_time():
        for i in range(3):
            yield i
            assert answered.wait(5), "the batch was held back waiting for more items"
            answered.clear()

    seen = []
    for batch in gather_batches(one_at_a_time(), 16, linger_s=0.05):
        seen.append(batch)
        answered.set()
    assert seen == [[0], [1], [2]]


def test_a_failing_source_delivers_what_came_before_then_raises():
    def source():
        yield from (1, 2)
        raise OSError("stream broke")

    batches = gather_batches(source(), 8, linger_s=0.5)
    assert next(batches) == [1, 2]
    with pytest.raises(OSError, match="stream broke"):
        next(batches)


def test_the_reader_stops_when_the_consumer_does():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    batches = gather_batches(endless(), 2, linger_s=0.01)
    assert next(batches) == [0, 1]
    batches.close()
    time.sleep(0.5)
    settled = len(produced)
    time.sleep(0.3)
    assert len(produced) == settled and settled <= 2 + 2 * 4 + 2  # the queue's bound, not forever
