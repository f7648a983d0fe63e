"""orthancfs: an Orthanc DICOM server as a local folder (FUSE) or a WebDAV share."""

__version__ = "0.1.0"
