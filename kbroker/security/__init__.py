"""Authorization: ACL bindings and the decisions made from them."""
