"""One behaviour suite, run against every frontend (as rclone's vfs/vfstest): the Tree itself, the
FUSE operations without a kernel, and the WebDAV application in process, each over a FakeOrthanc.

frontend.py is the interface and the error vocabulary; one adapter per frontend; pacs.py the data.
"""
