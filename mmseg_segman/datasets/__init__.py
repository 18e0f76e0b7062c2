"""Data checks: :class:`LoadCheckedAnnotations` and the dataset-level checks.

Importing this package registers the transform into MMSeg's ``TRANSFORMS`` and wraps
``BaseSegDataset`` (:func:`~.checks.install_dataset_checks`).
"""
from .checks import DataCheckError, describe_file_problem, install_dataset_checks
from .transforms import LoadCheckedAnnotations, check_finite_image, check_label_values

__all__ = [
    'DataCheckError', 'describe_file_problem', 'install_dataset_checks',
    'LoadCheckedAnnotations', 'check_finite_image', 'check_label_values'
]

install_dataset_checks()
