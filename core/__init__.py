"""The ground floor: settings, canonical events and the event bus, units, the served log,
the codec of Feast's Redis layout. Imports libraries and the feature contract only."""
