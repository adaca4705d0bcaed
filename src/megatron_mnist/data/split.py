"""How MNIST's training files split into train and validation digits: torch-free, so the launcher's checks and the
data module apply the same rule."""

# The original split MNIST's 60,000 training digits 55,000 / 5,000: one in twelve goes to validation.
VAL_FRACTION = 1 / 12


def split_sizes(total: int, val_size: int | None) -> tuple[int, int]:
    """(train, validation) digits of ``total``; ``val_size`` None = one in twelve. ValueError naming
    ``data.val_size`` when it leaves no digit on either side."""
    n_val = round(total * VAL_FRACTION) if val_size is None else val_size
    if not 0 < n_val < total:
        raise ValueError(
            f"data.val_size={n_val} must be between 1 and {total - 1} (the training files hold {total} digits)"
        )
    return total - n_val, n_val
