//! ControllerRevision history shared by DaemonSets and StatefulSets (not written yet).
