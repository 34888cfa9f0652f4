"""One module per provider type behind one small interface; `registry` lists them."""
