// Written by a helper.
