"""Readers for the real datasets users own: GDTM (preprocessed HDF5), AVE and MM-Fi.

Each reader is a sequence of (sample, target) pairs with the same Sample contract as the world (dict keyed by
(view, modality) of sensor-unit arrays). Missing or malformed files raise `DatasetFileError` naming the file.
"""

from admn_core.data.readers.ave import AVE_CLASSES, AVEReader
from admn_core.data.readers.gdtm import GDTMReader
from admn_core.data.readers.mmfi import MMFI_SPLITS, MMFiReader

__all__ = ["AVE_CLASSES", "MMFI_SPLITS", "AVEReader", "GDTMReader", "MMFiReader"]
