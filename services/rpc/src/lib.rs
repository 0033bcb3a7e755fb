//! Cinder-style RPC between Ember's processes: cast, call and fanout over a transport.
