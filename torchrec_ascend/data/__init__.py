"""Data loading for generative recommenders: readers, splits, jagged batches.

Typical use::

    from torchrec_ascend.data import leave_one_out, load_dataset, make_train_loader

    split = leave_one_out(load_dataset("ml-latest-small"))
    for batch in make_train_loader(split, max_seq_len=200, batch_size=128,
                                   seed=0, epoch=0):
        ...
"""

from torchrec_ascend.data.batches import ITEM_KEY, SequenceBatch
from torchrec_ascend.data.errors import DataFormatError, DatasetNotFoundError
from torchrec_ascend.data.examples import (
    EvalExample,
    TrainExample,
    make_eval_example,
    make_train_example,
)
from torchrec_ascend.data.filtering import k_core_mask
from torchrec_ascend.data.kuairand import KUAIRAND_LOG_COLUMNS, load_kuairand_logs
from torchrec_ascend.data.loaders import (
    EvalSequences,
    TrainSequences,
    collate_eval,
    collate_train,
    make_eval_loader,
    make_train_loader,
)
from torchrec_ascend.data.movielens import load_movielens_ratings
from torchrec_ascend.data.registry import (
    DATA_ROOT_ENV,
    available_datasets,
    dataset_path,
    default_data_root,
    load_dataset,
)
from torchrec_ascend.data.sasrec_txt import load_sasrec_txt
from torchrec_ascend.data.sequences import SequenceDataset
from torchrec_ascend.data.splits import (
    MIN_EVAL_LENGTH,
    EvalSet,
    LeaveOneOutSplit,
    leave_one_out,
)
from torchrec_ascend.data.synthetic import (
    kuairand_like_lengths,
    synthetic_sequence_dataset,
    write_kuairand_log,
)

__all__ = [
    "DATA_ROOT_ENV",
    "ITEM_KEY",
    "KUAIRAND_LOG_COLUMNS",
    "MIN_EVAL_LENGTH",
    "DataFormatError",
    "DatasetNotFoundError",
    "EvalExample",
    "EvalSequences",
    "EvalSet",
    "LeaveOneOutSplit",
    "SequenceBatch",
    "SequenceDataset",
    "TrainExample",
    "TrainSequences",
    "available_datasets",
    "collate_eval",
    "collate_train",
    "dataset_path",
    "default_data_root",
    "k_core_mask",
    "kuairand_like_lengths",
    "leave_one_out",
    "load_dataset",
    "load_kuairand_logs",
    "load_movielens_ratings",
    "load_sasrec_txt",
    "make_eval_example",
    "make_eval_loader",
    "make_train_example",
    "make_train_loader",
    "synthetic_sequence_dataset",
    "write_kuairand_log",
]
