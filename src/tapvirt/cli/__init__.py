"""Command-line front ends for tapvirt and tapvirt-prep."""
