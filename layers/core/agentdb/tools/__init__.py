"""SQL tools for agents: the catalog (servers, tools, schemas), the guards, the backends, the use cases."""
