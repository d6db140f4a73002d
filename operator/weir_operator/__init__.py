"""The weir operator: validates policies, renders ConfigMaps, rolls node reports up into status."""
