package manifest

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strings"
	"sync"

	apiextensions "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"

	"weir.dev/weir/deploy/crds"
)

// crdSchemas indexes the CRDs weir serves (deploy/crds) by group and kind, once. A
// CRD's YAML is parsed, and each version's validators built, on first use and kept: the
// CEL programs of a CRD version are compiled once per process, not per object or load.
var crdSchemas = sync.OnceValues(indexCRDs)

// crdSet is the CRDs by group and kind.
type crdSet struct {
	byKind map[schema.GroupKind]*crdKind
	// kinds lists every kind of each group, for the suggestion on a misspelt kind.
	kinds map[string][]string
}

type crdKind struct {
	file     string
	mu       sync.Mutex
	crd      *apiextensionsv1.CustomResourceDefinition // nil until first used
	err      error
	versions map[string]*versionValidator
}

// versionValidator holds what the API server builds for one CRD version: the
// structural schema (for defaults and list types), the OpenAPI schema validator and
// the CEL validator of the x-kubernetes-validations rules.
type versionValidator struct {
	structural *structuralschema.Structural
	openAPI    apiservervalidation.SchemaCreateValidator
	cel        *cel.Validator // nil when the schema has no rules
	err        error
}

// The group and kind of a CRD file, found without parsing it (spec.group and
// spec.names.kind, as controller-gen writes them; checked when the file is parsed).
var (
	crdGroupLine = regexp.MustCompile(`(?m)^  group: (\S+)$`)
	crdKindLine  = regexp.MustCompile(`(?m)^    kind: (\S+)$`)
)

func indexCRDs() (*crdSet, error) {
	set := &crdSet{byKind: map[schema.GroupKind]*crdKind{}, kinds: map[string][]string{}}
	err := fs.WalkDir(crds.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		data, err := fs.ReadFile(crds.FS, path)
		if err != nil {
			return err
		}
		if !bytes.Contains(data, []byte("\nkind: CustomResourceDefinition\n")) {
			return nil // the Gateway API's ValidatingAdmissionPolicy guards CRD upgrades only
		}
		g, k := crdGroupLine.FindSubmatch(data), crdKindLine.FindSubmatch(data)
		if g == nil || k == nil {
			return fmt.Errorf("%s: no spec.group or spec.names.kind", path)
		}
		gk := schema.GroupKind{Group: string(g[1]), Kind: string(k[1])}
		set.byKind[gk] = &crdKind{file: path, versions: map[string]*versionValidator{}}
		set.kinds[gk.Group] = append(set.kinds[gk.Group], gk.Kind)
		return nil
	})
	for _, k := range set.kinds {
		sort.Strings(k)
	}
	return set, err
}

// parse reads the CRD's file, on first use. k.mu is held.
func (k *crdKind) parse(gk schema.GroupKind) {
	if k.crd != nil || k.err != nil {
		return
	}
	data, err := fs.ReadFile(crds.FS, k.file)
	if err != nil {
		k.err = err
		return
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(data, crd); err != nil {
		k.err = fmt.Errorf("%s: %w", k.file, err)
		return
	}
	if crd.Spec.Group != gk.Group || crd.Spec.Names.Kind != gk.Kind {
		k.err = fmt.Errorf("%s: defines %s.%s, indexed as %s", k.file, crd.Spec.Names.Kind, crd.Spec.Group, gk)
		return
	}
	k.crd = crd
}

// validator is the version's validators, built on first use. A version the CRD does not
// list uses the schema of the CRD's storage version: weir reads some versions that the
// standard channel no longer carries (TLSRoute v1alpha3), and they share the Go types.
func (k *crdKind) validator(gvk schema.GroupVersionKind) *versionValidator {
	k.mu.Lock()
	defer k.mu.Unlock()
	version := gvk.Version
	if v, ok := k.versions[version]; ok {
		return v
	}
	v := &versionValidator{}
	k.versions[version] = v
	if k.parse(gvk.GroupKind()); k.err != nil {
		v.err = k.err
		return v
	}
	var crdVersion *apiextensionsv1.CustomResourceDefinitionVersion
	for i := range k.crd.Spec.Versions {
		cv := &k.crd.Spec.Versions[i]
		if cv.Name == version || (crdVersion == nil && cv.Storage) {
			crdVersion = cv
		}
	}
	if crdVersion == nil || crdVersion.Schema == nil {
		v.err = fmt.Errorf("CRD %s has no schema for %s", k.crd.Name, version)
		return v
	}
	internal := &apiextensions.CustomResourceValidation{}
	if err := apiextensionsv1.Convert_v1_CustomResourceValidation_To_apiextensions_CustomResourceValidation(crdVersion.Schema, internal, nil); err != nil {
		v.err = fmt.Errorf("CRD %s %s: %w", k.crd.Name, version, err)
		return v
	}
	s, err := structuralschema.NewStructural(internal.OpenAPIV3Schema)
	if err != nil {
		v.err = fmt.Errorf("CRD %s %s: %w", k.crd.Name, version, err)
		return v
	}
	v.structural = s
	openAPI, _, err := apiservervalidation.NewSchemaValidator(internal.OpenAPIV3Schema)
	if err != nil {
		v.err = fmt.Errorf("CRD %s %s: %w", k.crd.Name, version, err)
		return v
	}
	v.openAPI = openAPI
	v.cel = cel.NewValidator(s, true, celconfig.PerCallLimit)
	return v
}

// schemaCheck validates the object as the API server validates a custom resource on
// create: the schema's defaults applied, then the OpenAPI schema, list-type invariants
// and the CEL rules. status is dropped first, as the API server drops it on create.
// The errors wait in o.schemaErrs until weir's own checks of the object have run.
func (l *loader) schemaCheck(o *object, gvk schema.GroupVersionKind, data []byte) {
	set, err := crdSchemas()
	if err != nil {
		l.errorf(o, "", "reading weir's CRDs: %v", err) // a build problem, not the manifest's
		return
	}
	k := set.byKind[gvk.GroupKind()]
	if k == nil {
		return
	}
	v := k.validator(gvk)
	if v.err != nil {
		l.errorf(o, "", "%v", v.err)
		return
	}
	var u map[string]any
	if err := utiljson.Unmarshal(data, &u); err != nil {
		l.errorf(o, "", "%v", err)
		return
	}
	delete(u, "status")
	structuraldefaulting.PruneNonNullableNullsWithoutDefaults(u, v.structural)
	structuraldefaulting.Default(u, v.structural)
	errs := apiservervalidation.ValidateCustomResource(nil, u, v.openAPI)
	errs = append(errs, listtype.ValidateListSetsAndMaps(nil, v.structural, u)...)
	if v.cel != nil {
		// As the API server: the CEL rules run unless the schema found a blocking error
		// (a missing or unsupported value, a type error, a list or string too long).
		if blocked := blockingError(errs); blocked != nil {
			errs = append(errs, blocked)
		} else {
			celErrs, _ := v.cel.Validate(context.Background(), nil, v.structural, u, nil, celconfig.RuntimeCELCostBudget)
			errs = append(errs, celErrs...)
		}
	}
	for _, e := range errs {
		o.schemaErrs = append(o.schemaErrs, Error{
			File: o.doc.file.name, Line: o.doc.lineOf(e.Field), Object: o.id(), Field: e.Field,
			Message: fieldErrorMessage(e),
		})
	}
}

// addSchemaErrors reports the object's schema errors on the fields weir's own checks
// left alone (where both object to a field, weir's message is the more specific).
func (l *loader) addSchemaErrors(o *object, from int) {
	reported := map[string]bool{}
	for _, e := range l.errs[from:] {
		if e.Object == o.id() {
			reported[e.Field] = true
		}
	}
	for _, e := range o.schemaErrs {
		if !reported[e.Field] {
			l.errs = append(l.errs, e)
		}
	}
	o.schemaErrs = nil
}

// blockingError is the API server's hasBlockingErr (apiextensions-apiserver's
// customresource strategy).
func blockingError(errs field.ErrorList) *field.Error {
	for _, e := range errs {
		switch e.Type {
		case field.ErrorTypeNotSupported, field.ErrorTypeRequired, field.ErrorTypeTooLong, field.ErrorTypeTooMany, field.ErrorTypeTypeInvalid:
			return field.Invalid(nil, nil, "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation")
		}
	}
	return nil
}

// fieldErrorMessage words an API server field error for weir's "field: message" form.
func fieldErrorMessage(e *field.Error) string {
	value := ""
	switch bv := e.BadValue.(type) {
	case string:
		if bv != "object" && bv != "array" && bv != "string" { // CEL rules name the type
			value = fmt.Sprintf("%q", bv)
		}
	case int64, int32, int, float64, bool:
		value = fmt.Sprint(bv)
	}
	// kube-openapi words its messages "spec.x in body should be ..."; the field is
	// already named.
	if rest, ok := strings.CutPrefix(e.Detail, e.Field+" in body "); ok {
		e = &field.Error{Type: e.Type, Field: e.Field, BadValue: e.BadValue, Detail: rest}
	}
	switch e.Type {
	case field.ErrorTypeRequired:
		if e.Detail != "" {
			return "is required: " + e.Detail
		}
		return "is required"
	case field.ErrorTypeNotSupported:
		return strings.TrimSpace(value + " is not supported: " + e.Detail)
	case field.ErrorTypeInvalid, field.ErrorTypeTooLong, field.ErrorTypeTooMany, field.ErrorTypeDuplicate, field.ErrorTypeForbidden:
		if value != "" && e.Detail != "" {
			return value + ": " + e.Detail
		}
		if e.Detail != "" {
			return e.Detail
		}
	}
	return e.ErrorBody()
}
