"""Data sources: IDX files, image folders, text tables and offline built-in datasets."""
