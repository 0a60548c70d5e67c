package apply

import (
	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/kstatus/polling/clusterreader"
	"github.com/fluxcd/cli-utils/pkg/kstatus/polling/engine"
	"github.com/fluxcd/cli-utils/pkg/kstatus/polling/statusreaders"
	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"github.com/fluxcd/cli-utils/pkg/object"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// newPoller is the kstatus poller of the health wait and of the wait for
// definitions. Two of kstatus's defaults cost a request per object, per
// poll, that tells nothing more:
//   - its caching reader lists every kind in every namespace of the set on
//     each poll, Namespaces across the whole cluster (one app's wait reads
//     every app's Namespace): see pollByList;
//   - its Deployment, StatefulSet and ReplicaSet readers also list the
//     ReplicaSets and Pods they own, only to attach them to the event;
//     the status itself is kstatus's Compute of the object alone (as the
//     generic reader does), and podProblems explains what is not healthy.
func newPoller(c client.Reader, mapper meta.RESTMapper) *polling.StatusPoller {
	return polling.NewStatusPoller(c, mapper, polling.Options{
		CustomStatusReaders: []engine.StatusReader{statusreaders.NewGenericStatusReader(mapper, status.Compute)},
		ClusterReaderFactory: engine.ClusterReaderFactoryFunc(func(r client.Reader, m meta.RESTMapper, ids object.ObjMetadataSet) (engine.ClusterReader, error) {
			if pollByList(ids) {
				return clusterreader.NewCachingClusterReader(r, m, ids)
			}
			return clusterreader.NewDirectClusterReader(r, m, ids)
		}),
	})
}

// listPerGroup is how many objects of one kind in one namespace a list
// must stand for before one list per poll is cheaper than a GET each: a
// list of a namespace holds what the app does not wait for too.
const listPerGroup = 4

// pollByList reports whether ids are better read with one list per kind
// and namespace than with one GET per object. Cluster-scoped kinds are
// always read one by one: their list is the whole cluster's.
func pollByList(ids object.ObjMetadataSet) bool {
	groups := map[object.ObjMetadata]bool{}
	for _, id := range ids {
		if id.Namespace == "" {
			return false
		}
		groups[object.ObjMetadata{GroupKind: id.GroupKind, Namespace: id.Namespace}] = true
	}
	return len(ids) >= listPerGroup*len(groups)
}

// currentMessage is the kstatus message of obj (the server's answer to a
// write) if it is Current already, "" otherwise: a ConfigMap, a
// ServiceAccount or a Namespace is healthy as soon as it is written, and
// need not be polled.
func currentMessage(obj *unstructured.Unstructured) string {
	res, err := status.Compute(obj)
	if err != nil || res.Status != status.CurrentStatus {
		return ""
	}
	if res.Message == "" {
		return "Resource is current"
	}
	return res.Message
}
