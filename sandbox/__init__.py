"""Local emulators of the vendor APIs textback talks to, served over real HTTP on loopback."""
