package reconcile

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/inplace"
)

// accessCheck asks the API server whether the impersonated identity may
// write each object of a commit (a SelfSubjectAccessReview made as that
// identity, as `kubectl auth can-i --as` does). It is what makes a commit
// that reaches beyond its team fail as a whole with every such object
// named, before the planner's lists and dry-runs, whose own Forbidden
// would name a kind and a namespace, or stop at the first.
type accessCheck struct {
	user    string
	reviews reviewer
	mapper  meta.RESTMapper
}

// reviewer answers one access review (the identity's own
// SelfSubjectAccessReviews).
type reviewer interface {
	allowed(ctx context.Context, attr authorizationv1.ResourceAttributes) (bool, string, error)
}

type selfReviews struct{ client kubernetes.Interface }

var _ reviewer = selfReviews{}

func (s selfReviews) allowed(ctx context.Context, attr authorizationv1.ResourceAttributes) (bool, string, error) {
	review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attr}}
	out, err := s.client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		return false, "", err
	}
	return out.Status.Allowed && !out.Status.Denied, out.Status.Reason, nil
}

func newAccessCheck(cfg *rest.Config) (*accessCheck, error) {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &accessCheck{
		user:    cfg.Impersonate.UserName,
		reviews: selfReviews{client: client},
		mapper:  restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco)),
	}, nil
}

// writeVerb is what server-side apply asks of the authoriser, for a new
// object as for an existing one.
const writeVerb = "patch"

// accessTarget is one object to check, as the authoriser sees it.
type accessTarget struct {
	desired diff.Desired
	ref     diff.Ref
	attr    authorizationv1.ResourceAttributes
	// why the object needs it, when it is not the object's own write.
	why string
}

// gateWhy: refit writes the readiness gate of a gated workload's Pods.
const gateWhy = "its Pods' " + string(inplace.GateCondition) + " readiness gate; bind the ClusterRole refit-inplace (deploy/base/rbac-inplace.yaml)"

// check refuses desired as a whole if the identity may not write any of its
// objects: a *BadCommitError joining one *diff.ObjectError per object, each
// saying forbidden. Kinds the cluster does not know yet (a CRD of the same
// commit) are left to the planner, whose dry-run runs as the identity too.
func (a *accessCheck) check(ctx context.Context, desired []diff.Desired, namespace string) error {
	targets := a.targets(desired, namespace)
	denied, err := a.denied(ctx, targets)
	if err != nil {
		return fmt.Errorf("access review as %s: %w", a.user, err)
	}
	if len(denied) == 0 {
		return nil
	}
	errs := make([]error, 0, len(denied))
	for _, t := range denied {
		err := forbidden(a.user, t.attr)
		if t.why != "" {
			err = fmt.Errorf("%w, for %s", err, t.why)
		}
		errs = append(errs, &diff.ObjectError{Ref: t.ref, Source: t.desired.Source, Err: err})
	}
	return &BadCommitError{Err: fmt.Errorf("commit refused, nothing applied: %s may not write %d of its objects:\n%w",
		a.user, len(denied), errors.Join(errs...))}
}

// forbidden says what the identity may not do, in the API server's words.
func forbidden(user string, attr authorizationv1.ResourceAttributes) error {
	resource := schema.GroupResource{Group: attr.Group, Resource: attr.Resource}.String()
	if attr.Subresource != "" {
		resource += "/" + attr.Subresource
	}
	where := "at the cluster scope"
	if attr.Namespace != "" {
		where = "in namespace " + attr.Namespace
	}
	return fmt.Errorf("forbidden: %s may not %s %s %s", user, attr.Verb, resource, where)
}

// targets maps each object to the access it needs.
func (a *accessCheck) targets(desired []diff.Desired, namespace string) []accessTarget {
	var out []accessTarget
	for _, d := range desired {
		gvk := d.Object.GroupVersionKind()
		mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			continue // unknown kind, or not an object at all: the planner says which
		}
		obj := d.Object.DeepCopy()
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			if obj.GetNamespace() == "" {
				obj.SetNamespace(namespace)
			}
		} else {
			obj.SetNamespace("")
		}
		ref := diff.RefOf(obj)
		out = append(out, accessTarget{desired: d, ref: ref, attr: authorizationv1.ResourceAttributes{
			Verb: writeVerb, Group: mapping.Resource.Group, Version: mapping.Resource.Version, Resource: mapping.Resource.Resource,
			Namespace: obj.GetNamespace(), Name: obj.GetName(),
		}})
		if diff.IsWorkload(ref.GroupKind()) && inplace.HasGate(obj) {
			// Without it the Pods never become Ready: refuse now, not
			// after a health wait that cannot end well.
			out = append(out, accessTarget{desired: d, ref: ref, why: gateWhy, attr: authorizationv1.ResourceAttributes{
				Verb: writeVerb, Version: "v1", Resource: "pods", Subresource: "status", Namespace: obj.GetNamespace(),
			}})
		}
	}
	return out
}

// denied are the targets the identity may not write. One review per
// resource and namespace settles most of them (a rule without
// resourceNames allows every name); only where that is refused is each
// object asked about by name.
func (a *accessCheck) denied(ctx context.Context, targets []accessTarget) ([]accessTarget, error) {
	groups := map[authorizationv1.ResourceAttributes][]int{}
	for i, t := range targets {
		key := t.attr
		key.Name = ""
		groups[key] = append(groups[key], i)
	}
	var (
		mu     sync.Mutex
		out    []accessTarget
		errs   []error
		wg     sync.WaitGroup
		limit  = make(chan struct{}, 8)
		review = func(attr authorizationv1.ResourceAttributes) (bool, bool) {
			limit <- struct{}{}
			defer func() { <-limit }()
			ok, _, err := a.reviews.allowed(ctx, attr)
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return false, false
			}
			return ok, true
		}
	)
	for key, idx := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, answered := review(key); ok || !answered {
				return
			}
			for _, i := range idx {
				if targets[i].attr.Name == "" { // the question just answered
					mu.Lock()
					out = append(out, targets[i])
					mu.Unlock()
					continue
				}
				if ok, answered := review(targets[i].attr); !ok && answered {
					mu.Lock()
					out = append(out, targets[i])
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	sort.Slice(out, func(i, j int) bool {
		if a, b := out[i].ref.String(), out[j].ref.String(); a != b {
			return a < b
		}
		return out[i].why < out[j].why
	})
	return out, nil
}
