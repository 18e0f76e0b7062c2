"""Data checks: checked loading transforms and the dataset-level checks."""
from .checks import DataCheckError, bind_num_classes, check_dataset_folders, describe_file_problem
from .transforms import (
    LoadCheckedAnnotations,
    LoadCheckedImageFromFile,
    check_finite_image,
    check_label_values,
)

__all__ = [
    'DataCheckError', 'describe_file_problem', 'bind_num_classes', 'check_dataset_folders',
    'LoadCheckedImageFromFile', 'LoadCheckedAnnotations', 'check_finite_image',
    'check_label_values'
]
