build: ; @echo "build: not yet"
