"""data — everything before training: downloads and archives, labels, the split, the book's folder
layout, decoding and augmentation, the loader, the CIFAR archives, demo competitions, MixUp/CutMix.

May import: utils, parallel.
"""
from ..utils.exports import lazy_exports

#: public name -> the module of this room that defines it
EXPORTS = {
    "ArraySource": "loader",
    "FileSource": "loader",
    "ImageLoader": "loader",
    "DATA_HUB": "hub",
    "DATA_URL": "hub",
    "download": "hub",
    "download_extract": "hub",
    "default_data_dir": "hub",
    "extract": "archives",
    "read_csv_labels": "labels",
    "class_names": "labels",
    "reorg_train_valid": "reorg",
    "reorg_test": "reorg",
    "split_train_valid": "splits",
    "stratified_folds": "splits",
    "bootstrap_split": "splits",
    "read_image": "images",
    "read_images": "images",
    "load_image_array": "images",
    "list_images": "images",
    "preset_transforms": "transforms",
    "PRESETS": "transforms",
    "cifar_train": "transforms",
    "cifar_test": "transforms",
    "dog_train": "transforms",
    "dog_test": "transforms",
    "read_cifar_archive": "cifar",
    "find_cifar_archive": "cifar",
    "make_demo_archive": "cifar",
    "to_kaggle_layout": "cifar",
    "make_demo": "demo",
    "Mixup": "mixing",
    "FolderSource": "stream",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS, fallback='loader')
