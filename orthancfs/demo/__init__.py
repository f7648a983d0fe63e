"""A private Orthanc with generated sample studies, for the demo and the tests."""
