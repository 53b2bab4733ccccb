"""Editor integrations: installing the host scripts (``hushbridge install-host-scripts``)."""
