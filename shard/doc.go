// Package shard splits Apps among several refit replicas with the API server
// as the only coordinator. Each replica is a member: a Lease it renews. An App
// belongs to the live member that wins rendezvous hashing of its key, and is
// reconciled only under a per-App lock, a second Lease taken with optimistic
// concurrency, so two replicas never reconcile one App at once even while
// their views of the membership differ. It does not decide what to reconcile
// or when; it is not used in the single-replica (leader election) mode.
//
// Why rendezvous hashing over live Leases, not Flux's label shards: no one
// assigns shards by hand, a replica that dies hands its Apps to the others
// by itself, and a member that joins or leaves moves only the Apps it gains
// or loses (about 1/n of them), not a reshuffle.
//
// Why a lock per App on top of the hash: members learn of each other through
// a watch, so for a moment after a member joins the old owner still thinks it
// owns Apps the newcomer now owns. The lock, arbitrated by the API server's
// resourceVersion check, keeps that moment harmless. It is held only around
// a sync (created before, deleted after), so an idle App costs nothing and a
// dead replica leaves behind at most the locks of the syncs it was running.
//
// Expiry never compares clocks of two machines: a Lease counts as expired
// when this member has seen no new version of it for its leaseDurationSeconds
// on its own clock (as client-go's leader election does). A holder gives up
// its lock when it could not renew it for RenewDeadline (< LeaseDuration),
// before anyone else may take it.
package shard
