// Written by a helper; see the module comment in main.rs.
