"""Moving a running VM to another host: protocol, transport, sender and receiver."""
