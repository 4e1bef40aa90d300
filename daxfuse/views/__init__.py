"""The bus seen as files: sysfs, the NVDIMM bus, the control file and the
tree of a mount. Each view translates; the rules stay in dax/."""
