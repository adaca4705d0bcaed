import pytest

from megatron_mnist.data.resampling import EpochIndex, IdentityMultiEpochDatasetWrapper, MultiEpochDatasetResampler


def _resampler(n=100, num_samples=300, seed=43, shuffle=True):
    return MultiEpochDatasetResampler(
        IdentityMultiEpochDatasetWrapper(list(range(n))), num_samples=num_samples, shuffle=shuffle, seed=seed
    )


def test_same_seed_same_order():
    a, b = _resampler(), _resampler()
    assert [a[i] for i in range(300)] == [b[i] for i in range(300)]


def test_other_seed_other_order():
    a, b = _resampler(seed=43), _resampler(seed=44)
    assert [a[i] for i in range(100)] != [b[i] for i in range(100)]


def test_each_epoch_covers_every_index_in_a_new_order():
    r = _resampler()
    epochs = [[r[i] for i in range(e * 100, (e + 1) * 100)] for e in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(100))
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]
    assert epochs[0] != list(range(100))


def test_random_access_matches_sequential_access():
    # what makes resuming at any consumed_samples exact: item i does not depend on what was read before
    r = _resampler()
    sequential = [r[i] for i in range(300)]
    fresh = _resampler()
    assert [fresh[i] for i in (250, 3, 199, 100)] == [sequential[i] for i in (250, 3, 199, 100)]


def test_epoch_index_and_unshuffled_order():
    r = _resampler(shuffle=False, num_samples=250)
    assert len(r) == 250
    assert r.epoch_index(137) == EpochIndex(1, 37) and r[137] == 37
    with pytest.raises(IndexError):
        r[250]


def test_identity_wrapper_ignores_the_epoch():
    wrapped = IdentityMultiEpochDatasetWrapper(["a", "b", "c"])
    assert wrapped[EpochIndex(0, 2)] == wrapped[EpochIndex(7, 2)] == "c" and len(wrapped) == 3


def test_item_indices_are_the_epoch_indices_in_one_lookup_across_epochs():
    resampler = MultiEpochDatasetResampler(IdentityMultiEpochDatasetWrapper(range(7)), num_samples=40, seed=3)
    for batch in ([0, 1, 2], [5, 6, 7, 8, 13, 14, 15], list(range(40)), []):  # within, across two and more epochs
        assert resampler.item_indices(batch).tolist() == [resampler.epoch_index(i).idx for i in batch]
    with pytest.raises(IndexError):
        resampler.item_indices([39, 40])
