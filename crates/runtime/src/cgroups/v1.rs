//! cgroup v1 manager.
use std::path::Path;

use oci_spec::runtime::LinuxResources;

use super::{CgroupError, CgroupManager, CgroupMountSource, CgroupVersion, Stats};

#[derive(Debug)]
pub struct V1Manager {}

impl V1Manager {
    pub fn new(_root: &Path, _cgroups_path: &str) -> Result<Self, CgroupError> {
        Ok(Self {})
    }
}

impl CgroupManager for V1Manager {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }
    fn create(&self) -> Result<(), CgroupError> {
        Ok(())
    }
    fn apply(&self, _resources: &LinuxResources) -> Result<(), CgroupError> {
        Ok(())
    }
    fn add_process(&self, _pid: i32) -> Result<(), CgroupError> {
        Ok(())
    }
    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        Ok(vec![])
    }
    fn freeze(&self) -> Result<(), CgroupError> {
        Ok(())
    }
    fn thaw(&self) -> Result<(), CgroupError> {
        Ok(())
    }
    fn is_frozen(&self) -> Result<bool, CgroupError> {
        Ok(false)
    }
    fn stats(&self) -> Result<Stats, CgroupError> {
        Ok(Stats::default())
    }
    fn oom_killed(&self) -> Result<bool, CgroupError> {
        Ok(false)
    }
    fn destroy(&self) -> Result<(), CgroupError> {
        Ok(())
    }
    fn mount_sources(&self) -> Vec<CgroupMountSource> {
        vec![]
    }
}
